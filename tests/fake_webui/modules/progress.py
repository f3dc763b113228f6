"""`modules.progress.start_task / finish_task`, recorded."""

started = []
finished = []


def start_task(id_task):
    started.append(id_task)


def finish_task(id_task):
    finished.append(id_task)
