package bd

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/sealfs/sealfs/blockdev"
	"github.com/sealfs/sealfs/errs"
)

// integrityVariants are the variants that must detect tampering.
func integrityVariants() []variant {
	var out []variant
	for _, v := range variants() {
		if v.name != "Std" && v.name != "Crypt" {
			out = append(out, v)
		}
	}
	return out
}

// expectOnlyBad checks that exactly the blocks in bad fail with
// ErrAuthentication and the others read as want.
func expectOnlyBad(t *testing.T, d blockdev.Device, want []byte, bad ...int64) {
	t.Helper()
	bs := d.BlockSize()
	isBad := map[int64]bool{}
	for _, b := range bad {
		isBad[b] = true
	}
	for b := int64(0); b < d.Size()/int64(bs); b++ {
		got, err := readBlock(d, b)
		switch {
		case isBad[b] && !isAuth(err):
			t.Errorf("block %d: err = %v; want ErrAuthentication", b, err)
		case isBad[b] && !bytes.Equal(got, make([]byte, bs)):
			t.Errorf("block %d: failed read left unverified bytes in the buffer", b)
		case !isBad[b] && err != nil:
			t.Errorf("block %d: %v", b, err)
		case !isBad[b] && !bytes.Equal(got, want[b*int64(bs):(b+1)*int64(bs)]):
			t.Errorf("block %d: wrong data", b)
		}
	}
}

func TestTamperFlip(t *testing.T) {
	for _, v := range integrityVariants() {
		t.Run(v.name, func(t *testing.T) {
			const bs = 4096
			init := pattern(10*bs, 20)
			in := v.open(t, init, bs)
			f := blockdev.NewFaulty(in.data)
			if err := f.FlipBit(3*bs+100, 2); err != nil {
				t.Fatal(err)
			}
			expectOnlyBad(t, in.dev, init, 3)
			// A multi-block read returns the verified prefix only.
			p := bytes.Repeat([]byte{0xee}, 4*bs)
			n, err := in.dev.ReadAt(p, 1*bs)
			if n != 2*bs || !isAuth(err) || !bytes.Equal(p[:n], init[bs:3*bs]) || !bytes.Equal(p[n:], make([]byte, 2*bs)) {
				t.Errorf("ReadAt over the flipped block = %d, %v; want %d verified bytes, rest zeroed, ErrAuthentication", n, err, 2*bs)
			}
		})
	}
}

func TestTamperSwap(t *testing.T) {
	for _, v := range integrityVariants() {
		t.Run(v.name, func(t *testing.T) {
			const bs = 512
			init := pattern(8*bs, 21)
			in := v.open(t, init, bs)
			raw := in.data.Bytes()
			b1, b5 := bytes.Clone(raw[bs:2*bs]), bytes.Clone(raw[5*bs:6*bs])
			in.data.WriteAt(b5, bs)
			in.data.WriteAt(b1, 5*bs)
			expectOnlyBad(t, in.dev, init, 1, 5)
		})
	}
}

func TestTamperReplayBlock(t *testing.T) {
	for _, v := range integrityVariants() {
		if v.readOnly {
			continue
		}
		t.Run(v.name, func(t *testing.T) {
			const bs = 4096
			model := pattern(6*bs, 22)
			in := v.open(t, model, bs)
			old := bytes.Clone(in.data.Bytes()[2*bs : 3*bs])
			data := pattern(bs, 23)
			if _, err := in.dev.WriteAt(data, 2*bs); err != nil {
				t.Fatal(err)
			}
			copy(model[2*bs:], data)
			in.data.WriteAt(old, 2*bs) // the attacker restores the old block
			expectOnlyBad(t, in.dev, model, 2)
			// Also after a reopen with the trusted (new) root.
			d, err := in.reopen(nil)
			if err != nil {
				t.Fatal(err)
			}
			expectOnlyBad(t, d, model, 2)
		})
	}
}

func TestTamperRollbackTree(t *testing.T) {
	for _, v := range integrityVariants() {
		if v.readOnly {
			continue
		}
		t.Run(v.name, func(t *testing.T) {
			const bs = 4096
			in := v.open(t, pattern(6*bs, 24), bs)
			oldData, oldTree := bytes.Clone(in.data.Bytes()), bytes.Clone(in.tree.Bytes())
			if _, err := in.dev.WriteAt(pattern(bs, 25), 4*bs); err != nil {
				t.Fatal(err)
			}
			if err := in.dev.Sync(); err != nil {
				t.Fatal(err)
			}
			newRoot := in.dev.(rooted).Root()
			// Roll back the tree alone, then tree and data together.
			in.tree.WriteAt(oldTree, 0)
			if _, err := in.reopen(newRoot); !isAuth(err) {
				t.Errorf("open with rolled-back tree = %v; want ErrAuthentication", err)
			}
			in.data.WriteAt(oldData, 0)
			if _, err := in.reopen(newRoot); !isAuth(err) {
				t.Errorf("open with rolled-back image and tree = %v; want ErrAuthentication", err)
			}
		})
	}
}

func TestTamperTreeNode(t *testing.T) {
	// Cache 200: levels 0 and 1 are read back from the tree device in
	// groups of 4 leaves; 0: the whole tree is kept.
	for _, cache := range []int64{0, 200} {
		t.Run(name("cache=", cache), func(t *testing.T) {
			const bs = 512
			in := openVerityCache(t, pattern(8*bs, 26), bs, cache)
			root := in.dev.(rooted).Root()
			// Flip a leaf on the tree device: the tree no longer matches the root.
			f := blockdev.NewFaulty(in.tree)
			f.FlipBit(treeHeaderSize+5*NodeSize+1, 0)
			if _, err := in.reopen(root); !isAuth(err) {
				t.Errorf("open with tampered leaf = %v; want ErrAuthentication", err)
			}
			f.FlipBit(treeHeaderSize+5*NodeSize+1, 0)
			// An interior node is not used by reads but is reported by Check.
			l1 := treeHeaderSize + 8*NodeSize
			f.FlipBit(int64(l1), 7)
			d, err := in.reopen(root)
			if err != nil {
				t.Fatalf("open with tampered interior node: %v", err)
			}
			r, err := d.(*Verity).Check(context.Background(), nil)
			if !isAuth(err) || r.BadNodes != 1 || len(r.BadBlocks) != 0 {
				t.Errorf("Check = %+v, %v; want 1 bad node", r, err)
			}
			// Header damage.
			in.tree.WriteAt([]byte("X"), 0)
			if _, err := in.reopen(root); !errors.Is(err, errs.ErrCorrupt) {
				t.Errorf("open with bad magic = %v; want ErrCorrupt", err)
			}
		})
	}
}

func TestWrongMACKey(t *testing.T) {
	const bs = 512
	in := openVerity(t, pattern(4*bs, 27), bs)
	_, err := OpenVerity(in.data, in.tree, bytes.Repeat([]byte{1}, 32), in.dev.(rooted).Root(), &VerityOptions{BlockSize: bs})
	if !isAuth(err) {
		t.Errorf("open with another MAC key = %v; want ErrAuthentication", err)
	}
}

// TestCryptNoIntegrity documents that Crypt gives confidentiality only: a
// flipped ciphertext bit is not detected; the block decrypts to garbage.
func TestCryptNoIntegrity(t *testing.T) {
	const bs = 4096
	init := pattern(4*bs, 28)
	in := openCrypt(t, init, bs)
	blockdev.NewFaulty(in.data).FlipBit(bs+7, 0)
	got, err := readBlock(in.dev, 1)
	if err != nil {
		t.Fatalf("Crypt read of a flipped block = %v; Crypt has no integrity and must not fail", err)
	}
	if bytes.Equal(got, init[bs:2*bs]) {
		t.Fatal("flipped ciphertext decrypted to the original plaintext")
	}
	// XTS confines the damage to the 16-byte cipher block holding the bit.
	if d := firstDiff(got, init[bs:2*bs]); d != 0 || !bytes.Equal(got[16:], init[bs+16:2*bs]) {
		t.Errorf("damage not confined to the first 16 bytes (first diff %d)", d)
	}
}

func TestCheck(t *testing.T) {
	const bs = 512
	init := pattern(9*bs, 29)
	in := openVeriCrypt(t, init, bs)
	vc := in.dev.(*VeriCrypt)
	if r, err := vc.Verity().Check(context.Background(), nil); err != nil || r.Blocks != 9 {
		t.Fatalf("Check of a clean device = %+v, %v", r, err)
	}
	f := blockdev.NewFaulty(in.data)
	f.FlipBit(2*bs, 0)
	f.FlipBit(7*bs+5, 3)
	r, err := vc.Verity().Check(context.Background(), nil)
	if !isAuth(err) || len(r.BadBlocks) != 2 || r.BadBlocks[0] != 2 || r.BadBlocks[1] != 7 {
		t.Errorf("Check = %+v, %v; want bad blocks 2 and 7", r, err)
	}
}

// FuzzOpenVerity feeds arbitrary tree devices to OpenVerity: it must fail
// cleanly, never panic, and never accept a tree that does not match.
func FuzzOpenVerity(f *testing.F) {
	const bs = 512
	in := openVerity(f, pattern(3*bs, 30), bs)
	good := bytes.Clone(in.tree.Bytes())
	root := in.dev.(rooted).Root()
	f.Add(good)
	f.Add(good[:100])
	f.Fuzz(func(t *testing.T, tree []byte) {
		// Whole tree in memory, and leaf groups read back (cache 64).
		for _, cache := range []int64{0, 64} {
			d, err := OpenVerity(in.data, blockdev.NewMemoryFrom(tree, 512), testMACKey, root, &VerityOptions{BlockSize: bs, TreeCache: cache})
			if err == nil {
				checkContents(t, d, in.data.Bytes())
			}
		}
	})
}
