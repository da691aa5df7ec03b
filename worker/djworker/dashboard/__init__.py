"""The live job dashboard: one self-contained page (assets/dashboard.html), the JSON it polls,
and Prometheus metrics, for a running driver and for any job read from its files.

view.py is the pure core (events + the monitor's progress data -> the page's JSON);
source.py reads a job's files into it; prometheus.py renders it as metrics; server.py
wires the routes onto the progress server."""
