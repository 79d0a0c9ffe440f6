"""Interactive-segmentation evaluation: the RITM click protocol, NoC@80/85/90 and seconds per click."""
