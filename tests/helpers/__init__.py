"""What more than one test module needs: tiny data, models and projects, processes, ports, services,
snapshots, fake CPUs and weight comparison. Fixtures stay in the conftest.py files; everything a test
imports lives here."""
