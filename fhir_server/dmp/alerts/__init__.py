"""Alerts: Subscriptions (R4) and the delivery of what the outbox holds (R22 new documents, R5
emergency accesses), by e-mail or rest-hook, retried until delivered or given up."""
