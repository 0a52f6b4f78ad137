# The simulated world both board backends share: the air (Wi-Fi networks), the
# ESP32 Wi-Fi driver's rules, the pin files. Written in the subset of Python that
# CPython and MicroPython both run, with no I/O beyond reading/writing the world's
# JSON files: the CPython sim imports it as tools.sim.mpy.simworld (tools/sim/
# mp_network.py, mp_machine.py), the MicroPython backend as simworld (tools/sim/mpy/
# network.py, machine.py). Clock, locks and callbacks are handed in by each backend.
