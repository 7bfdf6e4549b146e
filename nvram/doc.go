// Package nvram keeps named state blobs — a virtual TPM's state, firmware
// variables — with self-describing metadata in a CocoonFS image.
//
// # The directory
//
// One file of the image, the directory (inode DirectoryInode), lists every
// entry. Its encoding is the blobstore directory scheme proposed for QEMU
// NVRAM by Michael Tsirkin and Stefan Berger (qemu-devel, September 2011);
// the full specification is docs/format/nvram.md:
//
//	Directory ::= SET OF Entry        -- CER: constructed, indefinite length
//	Entry     ::= SEQUENCE { nvram NVRAM, name UTF8String OPTIONAL }      -- DER
//	NVRAM     ::= SEQUENCE { type IA5String, mandatory SET OF Attribute,
//	                         optional SET OF Attribute, data OCTET STRING }
//	Attribute ::= IA5String                          -- a flag: a name, no value
//	            | SEQUENCE { name IA5String, value... }
//
// The directory is written in CER (indefinite length, so a writer needs no
// first pass to size it) and read in CER or with a definite length. Each
// entry is DER, so a reader skips one with a single length. Read-write
// metadata values are OCTET STRINGs; read-only ones use their natural
// universal type.
//
// Compatibility works without version numbers. An unknown optional
// attribute is skipped on read and kept byte for byte when the directory is
// rewritten. An unknown mandatory attribute makes its entry unusable — Get
// fails with an UnknownMandatoryError naming the attribute — but the entry
// is still kept on rewrite and the other entries stay usable. The one
// mandatory attribute this package understands is "realsize" (the number of
// data bytes in use; bytes beyond it are padding). Every entry this package
// writes carries it, and "tpm" entries must.
//
// # Where the data lives, and why
//
// Data is inline, in each entry's data OCTET STRING: the store is exactly
// one file. A change to any number of entries is then one CocoonFS
// transaction that rewrites that file, so a power cut at any write leaves
// the whole store as it was before or after the change — which is what a
// TPM needs when its permanent and volatile state change together — and a
// reader always sees one consistent directory with no dangling pointers to
// other inodes. The cost is that every change rewrites all entries; vTPM
// state is tens of kilobytes, and the directory is bounded by
// MaxDirectorySize. CocoonFS authenticates the file, so there is no checksum
// on top, and cocoonfs.Open detects a wrong key before any entry is read.
//
// # Inode numbers
//
// The package owns the inode range 0x4e56524d_00000000 to
// 0x4e56524d_ffffffff ("NVRM"); the directory is 0x4e56524d_00000001 and
// the rest of the range is reserved for this package's future use. The
// range avoids the 0x54504d00 ("TPM\0") ranges the CocoonFS specification
// suggests for TPM NV indices (0x54504d00_01xxxxxx) and persistent objects
// (0x54504d00_81xxxxxx).
//
// # Use
//
// Open a Store on an open *cocoonfs.FS. List, Get, Put and Remove work on
// one entry each; Update applies any number of changes to a Directory in
// one transaction. ParseDirectory and Directory.Encode are the codec alone.
// Entry names are file names (see ValidName), so an entry can be exported to
// or mounted as a file; TPM state entries use swtpm's own file names
// (package tpm). A Store is safe for concurrent use.
package nvram
