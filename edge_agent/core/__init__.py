"""What every layer of the shell shares: the clock, logging set-up, reading validation, the snapshot and clock
integrity flags. Imports no other part of the shell."""
