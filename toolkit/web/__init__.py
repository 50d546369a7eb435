"""`itops serve`: the read-only web view of the ticket log for auditors and team leads.

Server-rendered pages (Jinja2, autoescaped, as the reports) on Starlette, served by uvicorn; no
JavaScript at all. It reads the ledger through a read-only open and writes exactly one kind of
record: `audit.view`, who looked at which page of the audit trail, when (see `views`).
"""
