from stream.cli import main
from stream.tokens import Refusal, check_token

SECRET = "a-streamers-overlay-secret-of-32-bytes-or-more"


def test_the_token_command_issues_a_token_for_its_room_only(monkeypatch, capsys):
    monkeypatch.setenv("IDOLSTREAM_OVERLAY_SECRET", SECRET)
    assert main(["token", "--room", "studio-1", "--ttl", "120"]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert check_token(SECRET.encode(), token, "studio-1") is None
    assert check_token(SECRET.encode(), token, "studio-2") is Refusal.WRONG_ROOM
    assert f"/?room=studio-1&token={token}" in err, "the overlay URL to paste into OBS"


def test_the_token_command_says_what_to_set_without_a_secret(monkeypatch, capsys):
    monkeypatch.delenv("IDOLSTREAM_OVERLAY_SECRET", raising=False)
    assert main(["token", "--room", "studio-1"]) == 2
    assert "IDOLSTREAM_OVERLAY_SECRET" in capsys.readouterr().err
