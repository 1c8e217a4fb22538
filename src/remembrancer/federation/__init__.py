"""The federation layer of Remembrancer."""
