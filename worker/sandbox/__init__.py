"""The sandbox: `python` steps call only deployed task code, in processes that cannot reach the worker."""
