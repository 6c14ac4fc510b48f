"""The record export (DMP-RULES R22): ``Patient/[id]/$dmp-export``, a ZIP streamed as it is made."""
