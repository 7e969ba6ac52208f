"""The archive (``actionstream archive``): frames, skeletons and events of the live cameras kept
on disk as the producer and the stages wrote them, for replays and for training exports."""
