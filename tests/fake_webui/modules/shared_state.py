"""`modules.shared_state.State`: the fields and methods of AUTOMATIC1111 1.10.1's State that
LoRA Studio touches; `history` records (field, value) assignments for tests."""

import time


class State:
    def __init__(self):
        self.history = []
        self.begin_count = 0
        self.end_count = 0
        self.job = ""
        self.job_no = 0
        self.job_count = 0
        self.sampling_step = 0
        self.sampling_steps = 0
        self.textinfo = None
        self.interrupted = False
        self.skipped = False
        self.stopping_generation = False
        self.time_start = None

    def __setattr__(self, name, value):
        if name != "history" and "history" in self.__dict__:
            self.history.append((name, value))
        object.__setattr__(self, name, value)

    def interrupt(self):
        self.interrupted = True

    def begin(self, job="(unknown)"):
        self.begin_count += 1
        self.sampling_step = 0
        self.time_start = time.time()
        self.job_count = -1
        self.job_no = 0
        self.skipped = False
        self.interrupted = False
        self.stopping_generation = False
        self.textinfo = None
        self.job = job

    def end(self):
        self.end_count += 1
        self.job = ""
        self.job_count = 0
