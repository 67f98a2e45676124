"""lead-ray: LEAD iterative data selection on Ray."""
