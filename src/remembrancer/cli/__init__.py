"""The cli layer of Remembrancer."""
