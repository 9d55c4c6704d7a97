"""Deliveries: a directory (atomic write) or SMTP. Each raises TransientDeliveryError or
PermanentDeliveryError; the pipeline decides what a failure means for the message."""
