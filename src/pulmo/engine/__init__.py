"""Training engine: tasks own their loss; one Lightning loop trains everything."""
