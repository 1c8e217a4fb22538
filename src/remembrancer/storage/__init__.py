"""The storage layer of Remembrancer."""
