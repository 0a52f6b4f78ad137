"""Test-side access to a simulated board's pins.

Inputs are driven through pins.json ({"0": 1, ...}), outputs are read from
pins_out.json ({"pins": {"2": 1}, "pwm": {"4": {"freq": 5000, "duty_u16": 0}}}).
Both live next to the board folder unless the board was started with --pins/--pins-out.
"""

import json
import os
import tempfile


class Pins:
    def __init__(self, inputs, outputs):
        self.inputs = os.path.abspath(inputs)
        self.outputs = os.path.abspath(outputs)

    @classmethod
    def for_board(cls, board_dir):
        parent = os.path.dirname(os.path.realpath(board_dir))
        return cls(os.path.join(parent, "pins.json"), os.path.join(parent, "pins_out.json"))

    def levels(self):
        try:
            with open(self.inputs) as f:
                return {int(k): v for k, v in json.load(f).items()}
        except FileNotFoundError:
            return {}

    def set(self, pin, level):
        data = self.levels()
        data[int(pin)] = 1 if level else 0
        d = os.path.dirname(self.inputs) or "."
        fd, tmp = tempfile.mkstemp(prefix=".pins-", dir=d)
        with os.fdopen(fd, "w") as f:
            json.dump({str(k): v for k, v in data.items()}, f)
        os.replace(tmp, self.inputs)

    def press(self, pin, active_low=True):
        self.set(pin, 0 if active_low else 1)

    def release(self, pin, active_low=True):
        self.set(pin, 1 if active_low else 0)

    def outputs_state(self):
        try:
            with open(self.outputs) as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            return {"pins": {}, "pwm": {}}

    def output(self, pin):
        return self.outputs_state().get("pins", {}).get(str(pin))

    def pwm(self, pin):
        return self.outputs_state().get("pwm", {}).get(str(pin))
