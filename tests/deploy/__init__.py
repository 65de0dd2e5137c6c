"""What ships beside the code: README examples, deploy files, alert rules, the layout."""
