from django.db import models


class LoginFailure(models.Model):
    """A failed sign-in, kept LOGIN_FAILURE_WINDOW_SECONDS (see opsdash.logins)."""

    username = models.CharField(max_length=150, db_index=True)
    address = models.CharField(max_length=64, db_index=True)
    at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.username} from {self.address} at {self.at:%H:%M:%S}"
