"""Transport-free request control: runtime state, request parsing, the director (admit, schedule, settle)."""
