"""The inbox folder's identity, alone: gone, back and replaced are each one change."""

from __future__ import annotations

from worker.daemon.inbox_folder import InboxFolder


def test_the_inbox_gone_back_and_replaced_are_each_one_change(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    folder = InboxFolder(inbox)
    assert folder.present and not folder.changed()
    inbox.rmdir()
    assert folder.changed() and not folder.present
    assert not folder.changed() and not folder.present, "still gone: no news"
    inbox.mkdir()
    assert folder.changed() and folder.present
    other = tmp_path / "other"
    other.mkdir()  # made while the inbox still stands: another inode
    inbox.rmdir()
    other.rename(inbox)
    assert folder.changed() and folder.present, "another folder under the same name"
    assert not folder.changed()


def test_a_file_where_the_inbox_was_is_no_inbox(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    folder = InboxFolder(inbox)
    inbox.rmdir()
    inbox.write_bytes(b"not a folder")
    assert folder.changed() and not folder.present
