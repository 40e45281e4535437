"""Finding runs the way on-call people search: filters that combine, saved as named views.

- `filters`: `RunFilter` (workflow, status, step, error text, started within, waiting on what or whom, a regex
  search) and the SQL it becomes (fixed text with parameters: nothing from a filter is pasted into SQL).
- `views`: named filters shared by the team (`run_views`, migration 0013): `agentrt runs --save-view NAME`,
  `agentrt runs --view NAME`, `agentrt views`; the console's `:view NAME`.
"""
