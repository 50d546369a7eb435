"""Running a remediation over hosts: the runner, the run service, policy, approvals, windows."""
