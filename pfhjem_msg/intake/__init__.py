"""Taking messages from the hub: a spool directory and SMTP. A message is acknowledged to the
hub only after the store has it on disk."""
