"""The explorer layer of Remembrancer."""
