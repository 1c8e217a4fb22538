"""The node layer of Remembrancer."""
