"""The state database: outbox (where a reading gets its sequence number), audit chain and its verification,
energy ledger."""
