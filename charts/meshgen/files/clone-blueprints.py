# Init container of the meshgen worker: clone the blueprints repository into $BLUEPRINTS_DEST.
import os, pathlib, shutil, sys
import pygit2
url = os.environ.get("BLUEPRINTS_URL", "")
if not url:
    sys.exit("meshgen: set the Helm value blueprints.git.url; the worker renders the blueprints repository "
             "and will not start without it")
dest = pathlib.Path(os.environ["BLUEPRINTS_DEST"])
for child in dest.iterdir():  # a restarted pod keeps its emptyDir: start clean
    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
for bundle in ("/etc/ssl/certs/ca-certificates.crt",):
    if os.path.exists(bundle):
        pygit2.settings.set_ssl_cert_locations(bundle, "/etc/ssl/certs")
callbacks = None
token_file = os.environ.get("BLUEPRINTS_TOKEN_FILE")
if token_file:
    token = pathlib.Path(token_file).read_text().strip()
    callbacks = pygit2.RemoteCallbacks(credentials=pygit2.UserPass(os.environ["BLUEPRINTS_USERNAME"], token))
branch = os.environ.get("BLUEPRINTS_BRANCH") or "main"
depth = 0 if url.startswith(("file://", "/")) else 1  # libgit2's local transport cannot clone shallow
repo = pygit2.clone_repository(url, str(dest), checkout_branch=branch, callbacks=callbacks, depth=depth)
print(f"meshgen: cloned branch {branch} at {repo.head.target} into {dest}")
