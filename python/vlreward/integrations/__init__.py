"""Reward functions in the shapes RL frameworks call: trl (GRPOTrainer) and verl."""
