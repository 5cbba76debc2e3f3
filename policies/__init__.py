"""Pure energy-saving rules: (snapshot, now, calendar, params) -> intents + findings. No I/O, no clock."""
