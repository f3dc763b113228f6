"""`modules.interrogate`: present, as in A1111 and Forge 2 (Forge Neo removed it); the interrogator
object itself is `shared.interrogator`, which a test sets."""
