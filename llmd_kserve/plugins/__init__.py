"""Scheduler extension points (Protocols), the plugin registry and the list of built-ins."""
