"""Events for the booking system (SPEC §12): recorded with each change, posted by the worker."""
