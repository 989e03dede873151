"""The front ends: the only code that knows a wire. rest/ serves HTTP; errors.py maps domain codes to statuses."""
