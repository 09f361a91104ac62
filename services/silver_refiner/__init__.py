"""silver_refiner: contract-driven typing, validation, de-duplication and quarantine, exactly once."""
