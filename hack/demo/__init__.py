"""`make demo`: an autoscaled AgentWorker fleet on the rig taking real calls, watched live.

`__main__` runs the steps (the chart, the fleet, the calls, the view, the plot) and owns every
side effect; `fleet` talks to the cluster. `schedule` (when each call starts and ends) and
`timeline` (samples, scale events, the summary and the plot's series) are pure: no I/O, no
clock, no environment, so the unit tier tests them. `view` draws the live terminal view with
rich and `plot` the PNG with matplotlib, each from those values only.
"""
