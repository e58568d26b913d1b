"""Respiratory rate and heavy breathing from breath audio (Kumar et al., "Estimating
Respiratory Rate From Breath Audio Obtained Through Wearable Microphones")."""
