"""Building blocks shared by pulmo's models."""
