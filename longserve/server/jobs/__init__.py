"""Durable async jobs: the record, the storage backends, and the state machine."""
