"""Scheduler configuration: the pydantic schema of llm-d's EndpointPickerConfig and its loader."""
