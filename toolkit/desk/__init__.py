"""The service desk: tickets, SLA clocks, KPIs and their projection, ticket import/export."""
