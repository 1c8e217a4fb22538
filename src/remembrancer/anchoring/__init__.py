"""The anchoring layer of Remembrancer."""
