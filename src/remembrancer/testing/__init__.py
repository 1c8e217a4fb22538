"""The testing layer of Remembrancer."""
