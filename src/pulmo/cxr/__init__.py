"""Chest X-ray screening (normal / COVID-19 / viral pneumonia): preprocessing, quality
gates, duplicate finding, class balancing, training, inference and Grad-CAM."""
