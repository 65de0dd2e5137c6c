"""Route, key and model state: the tracker is its only writer."""
