# Runs first at every boot, before main.py. Kept tiny on purpose: anything
# that fails here would leave the board without its app.
import gc

gc.collect()
