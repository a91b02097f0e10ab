"""Operations that compose the layers below for people and schedulers: doctor (later retrain, alerts,
report). They return results; they never print."""
