"""What ``restore_dataset`` needs of a :class:`~silo_rt.restorer.Restorer`, for test
stand-ins that define ``restore(y, seed, ...)`` like a bundle runner."""

from types import SimpleNamespace

from silo_rt.degradations import get_degradation


class RestorerInterface:
    """Mix-in: ``runner`` is the stand-in itself, a call restores with its ``restore``."""

    degradation = get_degradation("sr4")

    @property
    def runner(self):
        return self

    def __call__(self, y, *, seed, **options):
        return SimpleNamespace(image=self.restore(y, seed, **options))
