"""pyvisa-sim YAML files that pin the command set of each lightloop VISA driver."""
