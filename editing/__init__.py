"""DiffFERV editing core (pure torch): DDIM schedules and steps, prompt token alignment."""
