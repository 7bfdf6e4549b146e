// Package tpm keeps a software TPM's state in the NVRAM store of a CocoonFS
// image (package nvram): it manufactures a TPM 2.0 with swtpm_setup, and
// moves its state between the image and the state directory swtpm runs on.
//
// # State files and entries
//
// swtpm with --tpmstate dir=DIR keeps a TPM 2.0's state in up to three
// files, named tpm2-00.<blob> after libtpms' blob names for TPM number 0:
// tpm2-00.permall (the permanent state: seeds, NV indices such as the EK
// certificate, persistent objects; rewritten whenever NV memory changes),
// tpm2-00.volatilestate (the volatile state: loaded objects, sessions, PCRs;
// written only when swtpm is told to store it, e.g. swtpm_ioctl -v, and
// loaded when swtpm starts) and tpm2-00.savestate (libtpms' saved-state
// blob; libtpms 0.9's TPM 2.0 did not write it after TPM2_Shutdown(STATE)
// here, keeping that state in permall). swtpm replaces each by writing
// TMP2-00.<blob> (open with O_CREAT|O_TRUNC|O_NOFOLLOW, write, fsync),
// renaming it over the file and fsyncing the directory; it fchmods a state
// file when it loads it, and holds an fcntl write lock on an empty .lock
// file in the directory while it runs (swtpm 0.7, dir backend). Each state
// file becomes an entry of type "tpm" with the same name in the store, byte
// for byte, so a flat view of the store (an export, or a FUSE mount) is a
// directory swtpm can run on as it is.
//
// # Manufacturing
//
// Manufacture runs swtpm_setup --tpm2 with an endorsement key, its
// certificate and a platform certificate in a private temporary directory
// (mode 0700, on tmpfs when /dev/shm is available, so the plaintext state
// need not reach a disk), stores the resulting state in one transaction,
// and removes the directory whether it succeeded or not, also when the
// context is cancelled (swtpm_setup and the swtpm it starts run in their
// own process group, which is killed). swtpm_setup's configuration files
// are generated into that directory, so nothing is read from or written to
// /etc, /var/lib/swtpm-localca or the user's home. The EK and platform
// certificates are signed by swtpm_localca: by default by a one-time CA
// created in the temporary directory and discarded with it; its root and
// issuer certificates are kept in the store (CARootEntry, CAIssuerEntry) so
// the EK certificate can be verified later. ManufactureOptions.CADir names
// a persistent swtpm-localca directory instead. This is the "offline
// manufacturing" the COCONUT-SVSM vTPM design asks for: the TPM gets its
// identity before the image first boots.
//
// # Export and import
//
// Export writes the state entries to a directory for swtpm --tpmstate
// dir=DIR (each file replaced atomically, stale ones removed); Import stores
// the state files of such a directory back in one transaction — entries for
// files that are gone (a volatile state swtpm no longer has) are removed in
// the same transaction — so the image holds a state swtpm actually had.
//
// # Running swtpm on the store
//
// Run runs swtpm with its state directory on a FUSE mount of the store
// (package nvram/fusefs) instead of an exported copy: swtpm's fsync of a
// state file and its rename over the old one are each a transaction of the
// image, done before the TPM answers the command that changed the state,
// so the image always holds the state of the last completed command, and
// no plaintext copy of the state exists outside the process. StateEntryType
// types the files swtpm writes; its .lock file lives in memory only. swtpm
// listens on loopback TCP ports (tpm2-tools' swtpm TCTI), or takes control
// commands on a Unix socket (RunOptions.CtrlSocket), through which QEMU's
// tpm-emulator backend passes it the TPM command channel.
package tpm
