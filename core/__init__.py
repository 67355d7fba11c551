"""The foundation every other package stands on: in-process channels and the acknowledgement
envelope, metrics, structured logs and trace ids, event-loop lag. It imports nothing of SEMS
(``make lint`` checks that), so any layer may use it."""
