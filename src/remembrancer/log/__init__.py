"""The log layer of Remembrancer."""
